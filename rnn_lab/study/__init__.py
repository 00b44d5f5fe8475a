"""Many runs: collect a sweep into a table, seed statistics, the report and its figures."""
