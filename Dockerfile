# syntax=docker/dockerfile:1
# variant-origin: Node 24 runs the TypeScript sources directly (type stripping), so there is no emit
# step; the typecheck stage fails the build on a type error instead.
# The Node version is the `node` devDependency's in package.json (tests run on that one); Renovate moves both together.

FROM node:24.21.0-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; none of them needs an install script.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24.21.0-bookworm-slim AS typecheck
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json app.ts server.ts ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
COPY bin ./bin
COPY migrations ./migrations
COPY test ./test
COPY bench ./bench
RUN node node_modules/typescript/bin/tsc -p tsconfig.json && touch /app/.typechecked

FROM node:24.21.0-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/data
WORKDIR /app
COPY --from=typecheck /app/.typechecked /tmp/.typechecked
COPY --from=deps --chown=node:node /app/node_modules ./node_modules
COPY --chown=node:node package.json app.ts server.ts ./
COPY --chown=node:node src ./src
COPY --chown=node:node plugins ./plugins
COPY --chown=node:node routes ./routes
COPY --chown=node:node bin ./bin
COPY --chown=node:node migrations ./migrations
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 3000
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1's child-free main process here: it handles SIGTERM itself (close-with-grace).
CMD ["node", "server.ts"]
