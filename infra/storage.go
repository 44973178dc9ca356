package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// Storage is the model bucket: users upload GGUF files under the model
// prefix, which both starts a deployment (via EventBridge) and is the only
// part of the bucket the tasks and the validate Lambda may read.
type Storage struct {
	ModelBucket awss3.Bucket
	AccessLogs  awss3.Bucket
}

// NewStorage creates the model bucket and its access-log bucket. The model
// bucket is retained on stack deletion: uploaded models are user data.
func NewStorage(scope constructs.Construct, id string) *Storage {
	c := constructs.NewConstruct(scope, jsii.String(id))
	logs := awss3.NewBucket(c, jsii.String("AccessLogs"), &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_PREFERRED,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Expiration: awscdk.Duration_Days(jsii.Number(90)),
		}},
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	cdknag.NagSuppressions_AddResourceSuppressions(logs, &[]*cdknag.NagPackSuppression{{
		Id:     jsii.String("AwsSolutions-S1"),
		Reason: jsii.String("This is the access-log bucket of the model bucket; logging it into itself would loop."),
	}}, jsii.Bool(true))

	bucket := awss3.NewBucket(c, jsii.String("Models"), &awss3.BucketProps{
		EventBridgeEnabled:     jsii.Bool(true),
		BlockPublicAccess:      awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:             jsii.Bool(true),
		Encryption:             awss3.BucketEncryption_S3_MANAGED,
		Versioned:              jsii.Bool(true),
		ServerAccessLogsBucket: logs,
		ServerAccessLogsPrefix: jsii.String("models/"),
		RemovalPolicy:          awscdk.RemovalPolicy_RETAIN,
	})
	return &Storage{ModelBucket: bucket, AccessLogs: logs}
}
