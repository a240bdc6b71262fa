"""What a reviewer signs: the release view of a verification (``view``: facts, lineage, latency),
the comparison with a previous release (``regression``), report.json/report.html and the
terminal table (``report``), JUnit XML and the Markdown summary (``report_ci``), inline SVG plots
(``svgplot``).

May import: everything below it (common, data, zoo, model, runtime, verification, quantization,
passes); never pipeline, serve, lesson or cli.
"""
