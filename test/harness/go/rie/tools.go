//go:build tools

// Package tools pins the emulator's command so that `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
