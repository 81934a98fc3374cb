//! The reserved endpoints under the configurable prefix (default `/_wxauth`).
