# Eddy images. Build one target at a time, from the repository root:
#   docker build --target operator -t eddy/operator:0.1.0 .
#   docker build --target runtime  -t eddy/runtime:nodejs22 .
# The runtime image is the base of every function image (FROM eddy/runtime:nodejs22, code in
# /var/task); examples/thumbnail/Dockerfile is one.
#
# BASE_IMAGE is the Node.js 22 image every stage starts from. The default is the official
# node:22-bookworm-slim; a build without access to a container registry passes a locally made
# image with the same Debian release and Node.js major instead (the test harness imports one under
# that very tag). Dependencies come from the npm registry inside the build (`npm ci` with the
# lockfile), so the build needs the npm registry but no other network.
#
# What each image carries:
#   operator  dist/operator/main.js, an esbuild bundle of the operator and its dependencies (the
#             Kubernetes client, the AWS SDK, express, ...). It needs no node_modules: what the
#             bundle leaves out is either a Node.js builtin or an optional module it loads in a
#             try/catch. The local stack (dist/operator/dev.js, s3rver) is not in the image.
#   runtime   dist/runtime, bundled with its dependencies left external; it imports only Node.js
#             builtins, and prom-client when metrics are scraped, so node_modules holds prom-client
#             and its dependencies at the lockfile's versions, nothing else.
# Both run as the base image's unprivileged `node` user (uid 1000) with NODE_ENV=production.
# Compilers and dev dependencies stay in the build stage.

ARG BASE_IMAGE=node:22-bookworm-slim

# Type-checks and bundles. Install scripts are skipped: the build needs only esbuild (whose binary
# comes as an optional dependency) and TypeScript, and no native module is compiled.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY operator ./operator
COPY runtime ./runtime
RUN npm run build \
  && node -e " \
    const p = require('./package.json'); \
    const pkg = (name, dependencies) => JSON.stringify( \
      { name, version: p.version, private: true, type: 'module', dependencies }, null, 2) + '\n'; \
    fs.mkdirSync('image/operator', { recursive: true }); \
    fs.writeFileSync('image/operator/package.json', pkg('eddy-operator', {})); \
    fs.writeFileSync('package.json', \
      pkg('eddy-runtime', { 'prom-client': p.dependencies['prom-client'] }));" \
  && npm prune --omit=dev --no-audit --no-fund \
  && find node_modules -depth -type d -empty -delete \
  && mkdir -p image/runtime \
  && mv package.json node_modules image/runtime/

FROM ${BASE_IMAGE} AS operator
ENV NODE_ENV=production
WORKDIR /opt/eddy
COPY --from=build /src/image/operator/package.json ./
COPY --from=build /src/dist/operator/main.js /src/dist/operator/main.js.map ./dist/operator/
USER node
ENTRYPOINT ["node", "/opt/eddy/dist/operator/main.js"]

FROM ${BASE_IMAGE} AS runtime
ENV NODE_ENV=production EDDY_CODE_DIR=/var/task PORT=8080
WORKDIR /opt/eddy
COPY --from=build /src/image/runtime/ ./
COPY --from=build /src/dist/runtime ./dist/runtime
WORKDIR /var/task
USER node
EXPOSE 8080
ENTRYPOINT ["node", "/opt/eddy/dist/runtime/main.js"]
