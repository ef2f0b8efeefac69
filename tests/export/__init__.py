"""Tests of lakeexportd/export/."""
