//go:build tools

// Package tools pins the NATS server command so that `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/nats-io/nats-server/v2"
