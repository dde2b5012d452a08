"""One cell's run: `launch` starts the child process and classifies how it ended; `child`
is that process, running the cell's phases on one loaded model."""
