"""The methods-on-GSM8K benchmark (``python -m benchmarks.bench_methods``), one module per job:
``specs`` (the configurations compared), ``runs`` (one job per problem and method, recorded
as JSONL), ``summary`` (paired summaries and aggregations of the same samples), ``report``
(the Markdown table and the chart). ``bench_methods`` starts the stack and parses the CLI."""
