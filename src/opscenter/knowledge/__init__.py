"""The knowledge base (seed 002): Markdown articles with versions, ranked full-text search
on SQLite (FTS5) and PostgreSQL (tsvector), contextual help and the product's own docs."""
