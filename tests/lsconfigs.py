"""Label Studio labeling configs shared by the backend tests."""

VIDEO_CONFIG = """<View>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="Vehicle" predicted_values="car, automobile"/>
    <Label value="Ball"/>
  </Labels>
</View>"""
