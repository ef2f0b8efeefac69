"""Tests of lakeexportd/lake/."""
