# syntax=docker/dockerfile:1
# The surge image: one binary (cgo, for ONNX Runtime), the ONNX Runtime
# shared library, the dashboard assets embedded; runs as a non-root user.
#   docker build -t surge:dev .
# deploy/dockerfile_test.go (make test-deploy) checks this file: stages,
# the library's version and sha256 against scripts/install-deps.sh, the user.

ARG GO_IMAGE=golang:1.26-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- ONNX Runtime: the library of npm onnxruntime-node, checked by sha256 ----
FROM ${NODE_IMAGE} AS ort
ARG ORT_VERSION=1.24.1
ARG ORT_SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
WORKDIR /ort
RUN npm pack --silent "onnxruntime-node@${ORT_VERSION}" \
	&& tar -xzf "onnxruntime-node-${ORT_VERSION}.tgz" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 \
	&& mv package/bin/napi-v6/linux/x64/libonnxruntime.so.1 "libonnxruntime.so.${ORT_VERSION}" \
	&& echo "${ORT_SHA256}  libonnxruntime.so.${ORT_VERSION}" | sha256sum -c - \
	&& rm -rf package ./*.tgz

# --- web assets: web/dist rebuilt from web/src (go:embed takes them) --------
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run build

# --- the binary --------------------------------------------------------------
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=web /src/web/dist ./web/dist
RUN CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o /out/surge ./cmd/surge

# --- runtime -----------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG ORT_VERSION=1.24.1
# ca-certificates: TLS to the model store (S3) and other dependencies.
RUN apt-get update -qq \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates tzdata \
	&& rm -rf /var/lib/apt/lists/* \
	&& groupadd --system --gid 65532 surge \
	&& useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/surge --create-home --shell /usr/sbin/nologin surge
COPY --from=ort /ort/libonnxruntime.so.${ORT_VERSION} /usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}
COPY --from=build /out/surge /usr/local/bin/surge
ENV ORT_LIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}
# The relative defaults (data/models, data/audit-spool) land in the user's home.
WORKDIR /var/lib/surge
USER 65532:65532
EXPOSE 8000 8001
ENTRYPOINT ["/usr/local/bin/surge"]
CMD ["serve"]
