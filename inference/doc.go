// Package inference owns the forecast served on the hot path: the model
// runtimes (ONNX Runtime, and the pure-Go walk of the same trees as the
// reference), hot-swapping model versions from the registry, and the
// failsafe-go policies and fallback chain that make a forecast always
// available: model → cached forecast → historical average → static.
package inference
