"""Run outputs: manifest.parquet, stats.json, report.html."""
