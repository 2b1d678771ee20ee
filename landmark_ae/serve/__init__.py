"""`landmark-ae serve`: an aiohttp server answering image queries against one embed run, loaded once."""
