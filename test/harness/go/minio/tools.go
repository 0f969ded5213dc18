//go:build tools

// Package tools pins the MinIO server command so that `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/minio/minio"
