"""The only code that speaks to ksqlDB.

``client`` (the facade) over ``transport``/``curl_stream`` (HTTP and TLS), ``retry``,
``catalog`` (SHOW/DESCRIBE/info), ``sql`` (every statement text), ``result`` (a query's
batches), ``framing`` + ``json_block`` + ``decode`` (wire bytes to Arrow), ``types`` and
``values`` (the ksqlDB -> Arrow mapping).
May import: ``config``, ``errors``, ``failpoints``. Imported by: ``export``, ``audit``,
``service``, ``cli``. Never by the sandbox, which is an independent witness of the wire.
"""
