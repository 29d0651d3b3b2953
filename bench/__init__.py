"""ssamba-bench harness: everything that measures, stores and reports (the models live in `models`)."""
