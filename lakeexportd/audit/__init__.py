"""Reports, statistics and verify: reads the lake, may ask ksqlDB to recount."""
