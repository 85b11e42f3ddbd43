import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { ReactFlowProvider } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import App from "./App.jsx";

// The page (templates/builder/canvas.html) hands over the journey, the API's
// address and the CSRF token as JSON.
const boot = JSON.parse(document.getElementById("builder-boot").textContent);

createRoot(document.getElementById("builder-root")).render(
  <StrictMode>
    <ReactFlowProvider>
      <App boot={boot} />
    </ReactFlowProvider>
  </StrictMode>,
);
