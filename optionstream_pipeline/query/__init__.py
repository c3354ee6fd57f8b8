"""DuckDB over the archive: views, macros, and ``optionstream query``."""
