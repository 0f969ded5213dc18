// A test function for the provided runtime, built with AWS's aws-lambda-go (not product code).
// What it does is chosen by the event: echo it, report its context, fail, sleep past its
// timeout or exit mid-invocation.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Action  string          `json:"action"`
	Message string          `json:"message"`
	SleepMs int             `json:"sleepMs"`
	Dir     string          `json:"dir"`
	Count   int             `json:"count"`
	Payload json.RawMessage `json:"payload"`
}

// OrderNotFound is a handler's own error type: Lambda reports its name as the errorType.
type OrderNotFound struct{ Message string }

func (e OrderNotFound) Error() string { return e.Message }

func handle(ctx context.Context, e event) (any, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	fmt.Printf("go handler %s action=%s\n", lc.AwsRequestID, e.Action)
	switch e.Action {
	case "context":
		deadline, _ := ctx.Deadline()
		return map[string]any{
			"requestId":          lc.AwsRequestID,
			"invokedFunctionArn": lc.InvokedFunctionArn,
			"functionName":       lambdacontext.FunctionName,
			"memoryLimitInMB":    lambdacontext.MemoryLimitInMB,
			"functionVersion":    lambdacontext.FunctionVersion,
			"logGroupName":       lambdacontext.LogGroupName,
			"logStreamName":      lambdacontext.LogStreamName,
			"remainingMs":        time.Until(deadline).Milliseconds(),
			"traceId":            os.Getenv("_X_AMZN_TRACE_ID"),
			"handler":            os.Getenv("_HANDLER"),
			"taskRoot":           os.Getenv("LAMBDA_TASK_ROOT"),
			"region":             os.Getenv("AWS_REGION"),
			"initializationType": os.Getenv("AWS_LAMBDA_INITIALIZATION_TYPE"),
			"tz":                 os.Getenv("TZ"),
			"pid":                os.Getpid(),
		}, nil
	case "error":
		return nil, OrderNotFound{Message: e.Message}
	case "sleep":
		time.Sleep(time.Duration(e.SleepMs) * time.Millisecond)
		return map[string]any{"slept": e.SleepMs, "pid": os.Getpid()}, nil
	case "barrier":
		// Waits until Count invocations have arrived (one file each in Dir): only invocations
		// running at once get past it.
		if err := os.WriteFile(fmt.Sprintf("%s/%d", e.Dir, os.Getpid()), nil, 0o644); err != nil {
			return nil, err
		}
		for {
			entries, err := os.ReadDir(e.Dir)
			if err != nil {
				return nil, err
			}
			if len(entries) >= e.Count {
				return map[string]any{"pid": os.Getpid()}, nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	case "crash":
		os.Exit(3)
	}
	return map[string]any{"echo": e.Payload}, nil
}

func main() {
	if os.Getenv("FAIL_INIT") != "" {
		fmt.Println("go handler failing its init")
		os.Exit(4)
	}
	lambda.Start(handle)
}
