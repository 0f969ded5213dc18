# Eddy images. Build one target at a time:
#   docker build --target operator -t eddy-operator .
#   docker build --target runtime  -t eddy-runtime .
# The runtime image is the base of every function image (FROM eddy-runtime, code in /var/task).

FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY operator ./operator
COPY runtime ./runtime
RUN npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim AS base
ENV NODE_ENV=production
WORKDIR /opt/eddy
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
USER 1000:1000

FROM base AS operator
ENTRYPOINT ["node", "/opt/eddy/dist/operator/main.js"]

FROM base AS runtime
ENV EDDY_CODE_DIR=/var/task PORT=8080
WORKDIR /var/task
EXPOSE 8080
ENTRYPOINT ["node", "/opt/eddy/dist/runtime/main.js"]
