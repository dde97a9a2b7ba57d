"""The capture inbox and the Label Studio round trip."""
