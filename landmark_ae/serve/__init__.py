"""`landmark-ae serve`: an aiohttp server answering image queries against one embed run, loaded once."""

TOKEN_ENV = "LANDMARK_AE_TOKEN"  # the token, where not given as token= (the command line moves it here)
