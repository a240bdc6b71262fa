"""Int8 and fp16 algorithms, independent of how a pass is driven: mergeable calibration statistics
(``calib_stats``), ONNX Runtime's calibrators fed in chunks (``calibration``), the accuracy-aware
int8 search (``int8_search``), Q/DQ form checks for TensorRT (``qdq_form``), fp16 conversion
(``fp16``) and where statistics and trials run (``executor``: this process, or an executor set
from above, so no pass imports Ray code).

May import: optkit.common, optkit.data, optkit.zoo, optkit.model, optkit.runtime, optkit.verification.
"""
