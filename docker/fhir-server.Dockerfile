# The in-memory FHIR R4 test server from tests/, as a local "EHR" for trying sync (compose
# profile `ehr`). Not for production: it keeps everything in memory and has no authentication.
FROM node:20-slim
WORKDIR /app
COPY tests/fhir_server/package.json tests/fhir_server/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tests/fhir_server/*.mjs ./
USER 1000
ENV FHIR_SERVER_HOST=0.0.0.0 FHIR_SERVER_PORT=8103
EXPOSE 8103
CMD ["node", "server.mjs"]
