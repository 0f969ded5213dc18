# Eddy images. Build one target at a time, from the repository root:
#   docker build --target operator           -t eddy/operator:0.1.0 .
#   docker build --target runtime            -t eddy/runtime:nodejs22 .
#   docker build --target runtime-python3.11 -t eddy/runtime:python3.11 .
#   docker build --target runtime-java17     -t eddy/runtime:java17 .
#   docker build --target runtime-provided   -t eddy/runtime:provided .
# A runtime image is the base of every function image (FROM eddy/runtime:<runtime>, code in
# /var/task); examples/thumbnail/Dockerfile and examples/thumbnail-python/Dockerfile are two.
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
#   runtime-provided    the runtime as above and Debian's curl: the function brings its own
#             executable `bootstrap` in /var/task (Go with aws-lambda-go, Rust, a shell script
#             with curl as in AWS's custom runtime tutorial).
#   runtime-python3.11  the runtime, Debian bookworm's python3 (3.11) and a virtual environment
#             in /opt/eddy/python with AWS's awslambdaric (PyPI, manylinux wheels: no compiler)
#             and pip, first on PATH, so a function image's `pip install --target /var/task`
#             installs for the interpreter that runs it. EDDY_PYTHON names it.
#   runtime-java17      the runtime, Debian's openjdk-17-jre-headless and AWS's Java runtime
#             interface client with its dependencies (jars from Maven Central, checked against
#             the SHA-256 sums below) in /opt/eddy/java, named by EDDY_JAVA_CLASSPATH.
# All run as the base image's unprivileged `node` user (uid 1000) with NODE_ENV=production.
# Compilers and dev dependencies stay in the build stages. A base image that carries the build
# host's extra certificate authorities (the test harness's does, at the path NODE_EXTRA_CA_CERTS
# names) passes them on to pip, so pip reaches PyPI the way npm does.

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

# The runtime-API runtimes' common part: the runtime process (Node.js, dist/runtime) serves
# Lambda's Runtime API in the pod and starts the language's process (docs/runtimes.md).
FROM runtime AS runtime-provided
ENV EDDY_RUNTIME=provided LAMBDA_TASK_ROOT=/var/task
# curl, with which a shell-script bootstrap speaks the Runtime API (AWS's custom runtime
# tutorial); bash, which the runtime runs a #!/bin/sh bootstrap with, as Lambda's /bin/sh is bash.
USER root
RUN apt-get update -q \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
USER node

# awslambdaric in a virtual environment of Debian's python3, made where the image's own python3
# will run it (the same package, the same path).
FROM ${BASE_IMAGE} AS python-ric
ARG AWSLAMBDARIC_VERSION=4.2.2
RUN apt-get update -q \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    python3 python3-venv \
  && if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then \
    printf '[global]\ncert = %s\n' "$NODE_EXTRA_CA_CERTS" > /etc/pip.conf; fi \
  && python3 -m venv /opt/eddy/python \
  && /opt/eddy/python/bin/pip install -q --no-cache-dir --disable-pip-version-check \
    --timeout 60 --only-binary=:all: "awslambdaric==${AWSLAMBDARIC_VERSION}" \
  && find /opt/eddy/python -name __pycache__ -type d -prune -exec rm -rf {} + \
  && touch /etc/pip.conf

FROM runtime AS runtime-python3.11
USER root
RUN apt-get update -q \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
COPY --from=python-ric /opt/eddy/python /opt/eddy/python
COPY --from=python-ric /etc/pip.conf /etc/pip.conf
ENV EDDY_RUNTIME=python3.11 LAMBDA_TASK_ROOT=/var/task EDDY_PYTHON=/opt/eddy/python/bin/python \
  PATH=/opt/eddy/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER node

# AWS's Java runtime interface client 2.10.1 and what it needs (as `mvn dependency:copy-dependencies`
# of test/harness/java/ric/pom.xml copies them), fetched from Maven Central and checked.
FROM ${BASE_IMAGE} AS java-ric
WORKDIR /opt/eddy/java
RUN node --input-type=module -e " \
    import { createHash } from 'node:crypto'; \
    import { writeFileSync } from 'node:fs'; \
    const central = 'https://repo1.maven.org/maven2'; \
    const jars = [ \
      ['com/amazonaws/aws-lambda-java-runtime-interface-client/2.10.1', 'aws-lambda-java-runtime-interface-client-2.10.1.jar', 'b0dd01f45b7258da0e32ade0bff950b12d0cf279ccebf416ad8c3795af21f1db'], \
      ['com/amazonaws/aws-lambda-java-core/1.4.0', 'aws-lambda-java-core-1.4.0.jar', '575c24393cc1ad645e83e618956eabd89ffe8cc09efae2cb62bc6589154d68ed'], \
      ['com/amazonaws/aws-lambda-java-serialization/1.2.0', 'aws-lambda-java-serialization-1.2.0.jar', '1513c1f945a3213f916a4b2de1760c97b51d84d110f82bbbcf9cfac53d5651e7'], \
      ['software/amazon/awssdk/utils-lite/2.34.0', 'utils-lite-2.34.0.jar', 'efaf784f07ae526f0b5c89d71ef21cf16636131c47d44616e3df9bedc3f4f89a'], \
      ['software/amazon/awssdk/annotations/2.34.0', 'annotations-2.34.0.jar', 'fafdcb55f4e5af603f5219f4a2b080aa0decb562a7c0944f7a7eca82dd47e487'], \
    ]; \
    for (const [dir, file, sha256] of jars) { \
      const url = central + '/' + dir + '/' + file; \
      const res = await fetch(url, { signal: AbortSignal.timeout(120000) }); \
      if (!res.ok) throw new Error(url + ' answered ' + res.status); \
      const bytes = Buffer.from(await res.arrayBuffer()); \
      const got = createHash('sha256').update(bytes).digest('hex'); \
      if (got !== sha256) throw new Error(url + ': SHA-256 ' + got + ', expected ' + sha256); \
      writeFileSync(file, bytes); \
    }"

FROM runtime AS runtime-java17
USER root
RUN mkdir -p /usr/share/man/man1 \
  && apt-get update -q \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    openjdk-17-jre-headless \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
COPY --from=java-ric /opt/eddy/java /opt/eddy/java
ENV EDDY_RUNTIME=java17 LAMBDA_TASK_ROOT=/var/task EDDY_JAVA_CLASSPATH=/opt/eddy/java/*
USER node
