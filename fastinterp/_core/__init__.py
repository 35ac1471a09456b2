"""What many stages share and no stage owns: argument validation (``validation``). Private to the
package: nothing here is public API."""
