// Build recipe for a test function on the provided runtime, with AWS's aws-lambda-go (not product code).
module eddy.dev/harness/lambda-go

go 1.26.0

require github.com/aws/aws-lambda-go v1.55.0
