"""Shipping a trained model: export (ONNX, TorchScript), int8, one self-describing bundle, a torch-free
runtime, and an HTTP service with a web page.

    export.py    run folder -> verified bundle (parity against PyTorch on real validation images)   [torch]
    quantize.py  ONNX fp32 -> int8 (onnxruntime static PTQ), the variant measured fastest here    [no torch]
    bundle.py    the bundle folder: bundle.json + model files, read back with every check           [no torch]
    runtime.py   engines (onnxruntime; TorchScript and run folders need torch), predict, evaluate  [no torch]
    serve.py     FastAPI app factory `create_app` and the uvicorn runner                          [no torch]

The [no torch] modules import only numpy, pillow, onnxruntime (and FastAPI/uvicorn), and from daxiao only
torch-free modules (errors, files, data.preprocess, data.decode, data.folder), so a deployment can install
daxiao without torch (README, "Shipping a model"). Nothing is imported here: `import daxiao.deploy.runtime`
must not pull in the export side.
"""
