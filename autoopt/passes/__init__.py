"""Build passes (export, fusion, quantization) and the cached pipeline that runs them."""
