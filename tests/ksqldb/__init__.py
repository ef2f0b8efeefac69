"""Tests of lakeexportd/ksqldb/."""
