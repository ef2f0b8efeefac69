"""The only code that speaks to ksqlDB: transport, framing, decode, types, values."""
