"""Label Studio labeling configs shared by the backend tests."""

VIDEO_CONFIG = """<View>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="Vehicle" predicted_values="car, automobile"/>
    <Label value="Ball"/>
  </Labels>
</View>"""
IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="Ball" predicted_values="disc, circle"/><Label value="Box"/></BrushLabels>
  <RectangleLabels name="rect" toName="image"><Label value="Ball" predicted_values="disc, circle"/><Label value="Box"/></RectangleLabels>
  <PolygonLabels name="poly" toName="image"><Label value="Ball" predicted_values="disc, circle"/><Label value="Box"/></PolygonLabels>
</View>"""
