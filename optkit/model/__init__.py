"""What an artifact is: Artifact and manifest.json (``artifact``: identity covering external data,
file kinds), ONNX loading and inspection (``onnx_utils``), the MODEL argument -> nn.Module
(``modelspec``), MACs per node and the precision they run in (``macs``), and model inputs
(``feeds``: random or from samples).

May import: optkit.common, optkit.data, optkit.zoo.
"""
