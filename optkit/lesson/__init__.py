"""The dense-network lesson: dense weights as JSON in three layouts (``weights_json``, validated
against ``schemas/``), activation lookup tables (``lut``) and their rewrite into a verified ONNX
model (``lut_apply``).

May import: everything below it (common ... release); never pipeline, serve or cli.
"""
