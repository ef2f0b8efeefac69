"""``make bench``: lakeexportd against a native floor and a naive pandas export (DESIGN §10)."""
