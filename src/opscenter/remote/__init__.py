"""Running a process: here, over SSH or in a container. Imports only `core`."""
