"""Analysis: paired statistics, comparisons with their regression verdict, reports, plots."""
