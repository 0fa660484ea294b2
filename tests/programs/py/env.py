import os
print("PYTHONUNBUFFERED=%s" % os.environ.get("PYTHONUNBUFFERED"))
