"""Tests of lakeexportd/service/."""
