"""Export: the picked sub-network as a deployable directory, and loading it back.

``writer.export_model`` extracts the sub-network into a physically smaller model and writes
it (Hugging Face files, the model card, the backends' files such as ONNX, a manifest of
checksums) beside its final place before renaming it in; ``loader.load`` verifies such a
directory whole and builds the model without running any of its code. The runtimes an
export is written for are the registry ``backends.BACKENDS``.
"""
