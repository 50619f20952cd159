"""The README's figures are written from bench/results.json: they must agree."""

import json

import readme_tables


def test_readme_tables_match_the_benchmark_results():
    readme = readme_tables.README.read_text()
    results = json.loads(readme_tables.RESULTS.read_text())
    assert readme_tables.rewritten(readme, results) == readme, "run: python tools/readme_tables.py"


def test_tables_show_each_notebook_and_what_it_built():
    results = {"notebooks": {"05_x": {"wall_s": 400.0, "peak_rss_mib": 1536, "built": ["base", "tokenizer"]},
                             "06_y": {"wall_s": 30.0, "peak_rss_mib": 512, "built": []}}}
    table = readme_tables.tables(results)
    assert "| notebook | 05 | 06 |" in table
    assert "| full mode | 6.7 min | 30 s |" in table
    assert "| peak memory | 1.5 GB | 0.5 GB |" in table
    assert "| built there | base, tokenizer | – |" in table
