"""db_broken_connector: fails on import, like a connector whose driver is missing."""

raise ImportError("db_broken_connector needs the driver 'nosuchdriver', which is not installed")
