"""Tests of lakeexportd/audit/."""
