// Package onnxpb holds the Go types of the ONNX protobuf schema (onnx.proto,
// package onnx, IR version 8), generated from the onnx.proto shipped by
// Debian's libonnx-dev 1.12. It owns nothing else: model/ builds and reads
// ONNX files with these types.
//
// Regenerate with protoc 3.21 and protoc-gen-go v1.36.12:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./model/onnxpb
package onnxpb

//go:generate protoc -I/usr/include/onnx --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/surgeworks/surge/model/onnxpb /usr/include/onnx/onnx.proto
