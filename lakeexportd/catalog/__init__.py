"""The data catalogue (DESIGN 13): every Parquet feed registered as an Apache Iceberg table.

``iceberg.LakeCatalog`` keeps a feed's table level with the lake after each lake commit; the
lake's ``_metadata.json`` stays the truth, the catalog follows it. Below ``export`` and
``audit`` (which call it), above ``lake`` and ``config`` (which it reads).
"""
