"""The dataset checks, one module per concern; each returns Findings and writes nothing."""
