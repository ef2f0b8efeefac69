"""Tests of lakeexportd/config/."""
