from fastapi import FastAPI

app = FastAPI(title="Hello from Phemeral")


@app.get("/")
def index() -> dict[str, str]:
    return {"message": "Hello from Phemeral (FastAPI)"}
