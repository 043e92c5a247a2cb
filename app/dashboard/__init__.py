"""The web dashboard: one HTML page, one script, one stylesheet, served by the API itself."""
