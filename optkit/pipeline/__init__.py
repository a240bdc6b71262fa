"""Chaining passes: YAML recipes, their execution and cache (``recipe``), load-time safety checks
(``recipe_checks``), and Ray scale-out of verification and int8 calibration (``distributed``).

May import: everything below it (common ... release); never serve, lesson or cli.
"""
