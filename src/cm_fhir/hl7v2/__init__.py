"""HL7v2 intake: normalise, frame, parse and acknowledge ADT messages. Pure: no I/O."""
